# frozen_string_literal: true

module TenantKit
  module Rails
    # Counter caches (`belongs_to :board, counter_cache: true`) after a
    # restore or purge: tenant_kit writes rows behind ActiveRecord's back,
    # so a parent's `cards_count` is the archived value (or unchanged, for a
    # parent that is not the tenant's) while its children changed. This
    # recounts, with one UPDATE per counter, the parents a restore can have
    # affected:
    # - parents with the tenant column: the tenant's rows;
    # - other parents (shared between tenants, `labels`): those the tenant's
    #   children pointed at before the restore or point at after it;
    # - a counter whose parent and child both lack the tenant column: every
    #   row (tenant_kit cannot tell whose they are).
    # A polymorphic counter cache (`belongs_to :stickable, polymorphic:
    # true, counter_cache: true`) is recounted per type: one counter for
    # each class its `*_type` column names, before or after the restore,
    # counting the children of that type only (as Rails' increments do).
    # The count is of every child row with the foreign key, as Rails' own
    # increments keep it.
    class CounterCaches
      # `type`: the class name a polymorphic child stores in `type_column`
      # (nil for a plain belongs_to).
      Counter = Struct.new(:child, :foreign_key, :parent, :primary_key, :column, :type_column, :type,
                           keyword_init: true) do
        def name
          "#{parent.table_name}.#{column}"
        end

        def key
          [child.table_name, foreign_key, type, parent.table_name, column]
        end
      end

      # Every counter cache of `models`, from their belongs_to reflections;
      # a polymorphic one once per class its children name now.
      def self.counters(models)
        models.flat_map do |model|
          model.reflect_on_all_associations(:belongs_to).flat_map do |reflection|
            next [] unless reflection.options[:counter_cache]

            reflection.polymorphic? ? polymorphic_counters(model, reflection) : plain_counter(model, reflection)
          end
        end.uniq(&:key)
      end

      def self.plain_counter(model, reflection)
        parent = App.safe_klass(reflection) or return []
        [Counter.new(child: model, foreign_key: reflection.foreign_key.to_s, parent: parent,
                     primary_key: reflection.association_primary_key.to_s,
                     column: reflection.counter_cache_column.to_s)]
      end

      # One counter per class in the child's type column (STI children
      # share their base class's table: counted once, by the base model).
      def self.polymorphic_counters(model, reflection)
        return [] if model != model.base_class || !model.table_exists?

        type_column = reflection.foreign_type.to_s
        return [] unless model.column_names.include?(type_column)

        model.unscoped.where.not(type_column => nil).distinct.pluck(type_column).filter_map do |type|
          parent = type.to_s.safe_constantize
          next unless parent.is_a?(Class) && parent < ::ActiveRecord::Base && parent.primary_key

          Counter.new(child: model, foreign_key: reflection.foreign_key.to_s, parent: parent,
                      primary_key: parent.primary_key.to_s, column: reflection.counter_cache_column.to_s,
                      type_column: type_column, type: type.to_s)
        end
      end
      private_class_method :plain_counter, :polymorphic_counters

      def initialize(models, tenant_column:, tenant_id:)
        @models = models
        @tenant_column = tenant_column.to_s
        @tenant_id = tenant_id
        @counters = current_counters
        @before = {}
      end

      # Call before the restore: the shared parents the tenant's children
      # point at now (a purge takes those children away).
      def remember
        @counters.each { |c| @before[c.key] = shared_parent_ids(c) if shared?(c) }
        self
      end

      # Recount; returns { "labels.cards_count" => rows updated } (a
      # polymorphic counter sums its types). The restore can bring classes
      # into a polymorphic type column, and a purge take them away: the
      # counters of both are recounted.
      def reset
        counters = (@counters + current_counters).uniq(&:key)
        counters.each_with_object({}) do |c, counts|
          updated = parents_to_reset(c).update_all("#{quote(c.column)} = (#{count_sql(c)})")
          counts[c.name] = counts.fetch(c.name, 0) + updated
        end
      end

      private

      def current_counters
        self.class.counters(@models).select { |c| usable?(c) }
      end

      def usable?(counter)
        [counter.child, counter.parent].all? { |m| m.table_exists? } &&
          counter.parent.column_names.include?(counter.column) &&
          counter.child.column_names.include?(counter.foreign_key)
      end

      # The counter's children: of its type, for a polymorphic one.
      def children(counter)
        rows = counter.child.unscoped
        counter.type ? rows.where(counter.type_column => counter.type) : rows
      end

      def owned?(model)
        model.column_names.include?(@tenant_column)
      end

      def shared?(counter)
        !owned?(counter.parent) && owned?(counter.child)
      end

      def shared_parent_ids(counter)
        children(counter).where(@tenant_column => @tenant_id).where.not(counter.foreign_key => nil)
               .distinct.pluck(counter.foreign_key)
      end

      def parents_to_reset(counter)
        parents = counter.parent.unscoped
        return parents.where(@tenant_column => @tenant_id) if owned?(counter.parent)
        return parents unless shared?(counter)

        parents.where(counter.primary_key => (@before.fetch(counter.key, []) | shared_parent_ids(counter)))
      end

      def count_sql(counter)
        child = quote_table(counter.child.table_name)
        parent = quote_table(counter.parent.table_name)
        of_type = counter.type ? " AND #{child}.#{quote(counter.type_column)} = #{quote_value(counter.type)}" : ""
        "SELECT COUNT(*) FROM #{child} WHERE #{child}.#{quote(counter.foreign_key)} = " \
          "#{parent}.#{quote(counter.primary_key)}#{of_type}"
      end

      def quote_value(value)
        ::ActiveRecord::Base.connection.quote(value)
      end

      def quote(column)
        ::ActiveRecord::Base.connection.quote_column_name(column)
      end

      def quote_table(table)
        ::ActiveRecord::Base.connection.quote_table_name(table)
      end
    end
  end
end
