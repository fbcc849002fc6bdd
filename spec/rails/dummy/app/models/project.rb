# frozen_string_literal: true

class Project < ApplicationRecord
  belongs_to :tenant
  has_many :tasks, dependent: :destroy
  has_many :documents, dependent: :destroy
  has_many :comments, as: :commentable, dependent: :destroy
end
