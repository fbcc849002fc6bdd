# frozen_string_literal: true

class User < ApplicationRecord
  belongs_to :tenant
  has_many :assigned_tasks, class_name: "Task", foreign_key: :assignee_id, inverse_of: :assignee, dependent: :nullify
  has_one_attached :avatar
end
